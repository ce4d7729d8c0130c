"""HumanRef evaluation: the benchmark runner (``run_humanref``), the metric (``metric``, with
``metric_results``, ``metric_inputs``, ``metric_match``) and its reports (``metric_report``)."""
