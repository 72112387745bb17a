"""MEMORY.md: the file format, and keeping it safe on disk between sessions."""
