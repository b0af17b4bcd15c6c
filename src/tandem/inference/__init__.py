"""In-process inference over ONNX Runtime; never imports the training stack.

The public interface:

- :class:`Predictor` (:mod:`~tandem.inference.predictor`): a verified bundle in ONNX Runtime, CPU or CUDA
  (:func:`default_providers`), one row or millions; :func:`run_graph` runs encoded rows through a session,
  text rows in groups of similar length;
- :class:`Explainer` and :class:`ExplainError` (:mod:`~tandem.inference.explain`): per-column contributions
  of tree and linear members, from the bundle's ``explain.json``;
- drift (:mod:`~tandem.inference.drift`): :func:`compare` new rows with the training profile, and the
  profiles a study writes (:func:`numeric_profile`, :func:`numeric_profiles`, :func:`categorical_profile`,
  :func:`word_counts`).
"""

from tandem.inference.drift import categorical_profile, compare, numeric_profile, numeric_profiles, word_counts
from tandem.inference.explain import Explainer, ExplainError
from tandem.inference.predictor import Predictor, default_providers, run_graph

__all__ = ["ExplainError", "Explainer", "Predictor", "categorical_profile", "compare", "default_providers",
           "numeric_profile", "numeric_profiles", "run_graph", "word_counts"]
