"""The web page (`talking-portrait ui`): Gradio tabs over the pipeline's jobs (needs the ui extra)."""
