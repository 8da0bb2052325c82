"""dragonclf: build an image classifier from an idea, in a browser or a shell.

The package holds all the logic, one module per stage (store, ingest, search,
download, backbones, features, train, interpret, predict, clean). It never
imports gradio: app.py is a thin UI over it, and `python -m dragonclf` a thin CLI.
"""

__version__ = "0.1.0"
