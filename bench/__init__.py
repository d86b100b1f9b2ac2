"""Side-by-side benchmarks: Noctis against dcmtk's storescp and Orthanc (SQLite, PostgreSQL).

Run `python -m bench --help` (or `python bench/run.py --help`) from the repository root;
bench/README.md says what each figure means.
"""
