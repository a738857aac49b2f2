"""(filled in as components land)"""
