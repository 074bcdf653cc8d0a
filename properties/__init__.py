"""The plugin's yaml defaults (overall.yaml, model/<Model>.yaml, dataset/<dataset>.yaml), installed as
``recbole_lsc.properties`` (see setup.cfg)."""
