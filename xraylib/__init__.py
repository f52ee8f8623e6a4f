"""xraylib: shared, framework-light code for the chest X-ray notebooks.

Importing ``xraylib`` (or any module without a ``tf_`` / ``torch_`` prefix)
never imports TensorFlow or PyTorch. Framework code lives in ``tf_*`` and
``torch_*`` modules that are imported only when needed, because importing
TensorFlow and then torch in one process crashes on some machines.
"""

__version__ = "0.1.0"
