"""Small models over embeddings: classify / regress / retrieve / hybrid."""
