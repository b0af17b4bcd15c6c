"""The names of a bundle's files: the one place both lives look them up.

A bundle folder holds ``manifest.json`` (read first: it lists every other file with its sha256),
``model.onnx`` (the whole inference pipeline), ``profile.json`` (training statistics for drift),
``explain.json`` (what explanations need), ``report.html``, ``tokenizer.json`` when the model
reads text through a sentence encoder, and ``native/``: each member's learner-native files, the
preprocessing's statistics and the sentence and image encoders' graphs.
"""

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
PROFILE_FILE = "profile.json"
EXPLAIN_FILE = "explain.json"
REPORT_FILE = "report.html"
#: The sentence encoder's tokenizer, in bundles whose preprocessing has a text encoder.
TOKENIZER_FILE = "tokenizer.json"
NATIVE_DIR = "native"
#: Under ``native/``: the preprocessing's fitted statistics and the sentence encoder's own graph.
PREPROCESSING_FILE = "preprocessing.json"
ENCODER_FILE = "text_encoder.onnx"
#: Under ``native/``: the frozen image backbone's graph, in bundles whose members read image embeddings.
IMAGE_ENCODER_FILE = "image_encoder.onnx"
