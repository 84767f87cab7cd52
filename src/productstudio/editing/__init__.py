"""Editing real product photos: background removal (``cutout``), studio composition on preset canvases
(``compose``, ``presets``), compliance checks and gates (``compliance``), provenance metadata (``provenance``),
the batch over a photo folder (``studio``) and the labelled evaluation set (``evalset``)."""
