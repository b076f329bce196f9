"""Where samples come from: one module per kind of collection.

Each source turns its collection into a sample table (one row per sample: the columns of
``geoscope.data.samples.SAMPLE_COLUMNS`` plus any extra fields) and the ``Issue`` list of what it
could not use; ``geoscope.data.dataset.open_dataset`` picks the source and wraps the table in a
``Dataset``. ``columns`` holds what the sources share: guessing column names, parsing coordinates.
"""
