"""The command line (``byoc-torch``) and the overhead study behind ``byoc-torch bench``."""
