"""The interactive visualiser (visualizer.py): a model session, a small web app and its static page."""
