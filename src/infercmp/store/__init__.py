"""What a run leaves on disk: the run store, its schema and frames, the reader of older runs, the
tune file.
"""
