"""Data layer: loaders, validation, item features, synthetic data and leak-free splits.

Modules: ``schema`` (containers), ``errors``, ``paths``, ``download``, ``validate``/``tables``
(parsing with line-numbered errors), ``item_features`` (``ItemFeatures``, ``KnowledgeGraph``),
``side_info`` (titles, genres, years, artist names), ``kg`` (MKR/KGCN knowledge graphs),
``text_vectors`` (frozen text vectors, ``text_cache_path``), ``loaders``
(``load_interactions``), ``synthetic`` (``generate``), ``split`` (``leave_one_out``,
``ncf_split``), ``ncf_files``, ``prepare`` (``prepare_split``, ``save_split``,
``load_split_file``).
"""
