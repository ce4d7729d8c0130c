"""The text contracts of contracts.md, one module each, writer and reader together:

- :mod:`~rexthinker.contracts.hint`: the box hint, the user text and the GRPO ``problem`` cell;
- :mod:`~rexthinker.contracts.answer`: the json answer;
- :mod:`~rexthinker.contracts.completion`: the ``<think>…</think><answer>…</answer>`` layout;
- :mod:`~rexthinker.contracts.trace`: the plan / action / summary trace and its marks.
"""
