"""Datasets for Seg-R1: one Parquet format, its reader, converters from public layouts, synthetic data.

Modules (import them directly; this package imports nothing heavy):
- `schema`    the Parquet schema (columns, tasks, instructions) and row validation
- `codec`     PNG/JPEG bytes <-> numpy arrays, with errors that say where the bytes came from
- `writer`    `DatasetWriter`: streams validated rows into a Parquet file in modest row groups
- `dataset`   `SegDataset`: Parquet -> `segr1.protocol.Sample` in the training frame, or at original size
- `sampler`   `EpochSampler`: deterministic, resumable epoch-wise shuffling
- `synth`     deterministic synthetic camouflaged objects (`synthesize`, `synth_sample`)
- `convert`   `convert(name, root, out, split)`: COD10K, CAMO, NC4K, DUTS, DIS5K, RefCOCO/+/g, ReasonSeg
- `fixtures`  `voc_scene()`: a real PASCAL VOC photo with instance masks, for tests
"""
