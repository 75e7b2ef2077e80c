"""Provider integrations (installed as ``tcc_plugin.integrations``); each needs its extra."""
