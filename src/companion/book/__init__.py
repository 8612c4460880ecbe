"""Helpers for the book's chapters: figures, toy problems, random instances, timing.

Not part of the public API of ``companion``: they serve the chapters and may change with
them.
"""
