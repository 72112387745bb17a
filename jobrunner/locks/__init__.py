"""One run at a time: OS-level locks that die with their process, and holder records."""
