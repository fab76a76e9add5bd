"""The review UI: a Gradio app mounted in the service under /review (see review_ui.app)."""
