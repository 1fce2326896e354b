"""The Gradio demo: `app` (the page and its analysis function) and `highlight` (findings spans in a report)."""
