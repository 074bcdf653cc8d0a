"""``recbole-lsc tune``: RecBole-style hyper-parameter search over any model the plugin runs.

RecBole's ``HyperTuning`` drives the search; the plugin supplies the parts RecBole gets
wrong for it: a params file read without ``eval`` and checked before any training
(:mod:`~recbole_lsc.tuning.params_file`), an objective that runs the plugin's own pipeline
and scores the tuned model's row on validation only (:mod:`~recbole_lsc.tuning.objective`),
and the trials' table (:mod:`~recbole_lsc.tuning.command`). See docs/tuning.md.
"""
