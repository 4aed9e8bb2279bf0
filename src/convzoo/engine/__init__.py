"""Training, evaluation and checkpointing. Never imports a specific model (only create_model).

- train.fit(cfg, out): the training loop (cfg from convzoo.recipes.resolve)
- evaluate.evaluate: top-1/top-5 over a loader, center and ten-crop (the `eval` command wires it)
- optim: optimizers, the papers' lr schedules, EMA
- checkpoint: atomic writes, exact resume
"""
