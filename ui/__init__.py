"""The Gradio UI: one module per tab. Handlers are thin: read inputs, call dragonclf, format."""
