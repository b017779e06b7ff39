"""The parts of benchmarks/search_quality.py: presets, measured runs, the four pairs, the report."""
