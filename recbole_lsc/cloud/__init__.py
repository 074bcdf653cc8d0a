"""The cloud: the LLM recommender, its backbones and training, candidate generation, the trained-LLM store."""
