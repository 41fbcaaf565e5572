"""Data selection: embed a pool of SFT examples and a few target-task prompts, pick the pool examples
that serve the targets (RDS+, DEFT, random), at pool scale (cached embedding chunks, FAISS search)."""
