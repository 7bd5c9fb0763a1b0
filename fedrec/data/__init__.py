"""Data layer: loaders, validation, synthetic data and leak-free splits.

Modules: ``schema`` (containers), ``errors``, ``paths``, ``download``, ``validate``/``tables``
(parsing with line-numbered errors), ``side_info``, ``loaders`` (``load_interactions``),
``synthetic`` (``generate``), ``split`` (``leave_one_out``, ``ncf_split``), ``ncf_files``,
``prepare`` (``prepare_split``, ``save_split``, ``load_split_file``).
"""
