"""The terminal dashboard (`taro dash`), built on Textual: `pip install runtools[tui]`."""
