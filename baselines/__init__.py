"""Baseline systems the engine is compared against: Fiddler and llama.cpp."""
