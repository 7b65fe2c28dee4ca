"""`kvprobe report`: result files in, Markdown/HTML/CSV/JSON/charts out. It never runs an engine.

analysis (numbers) -> layout (a Document of words and tables) -> one writer per format.
"""
