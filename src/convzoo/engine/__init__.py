"""Training, evaluation and checkpointing. Never imports a specific model (only create_model).

- train.fit(cfg, out): the training loop (cfg from convzoo.recipes.resolve)
- evaluate.evaluate / evaluate_weights: top-1/top-5, center and ten-crop
- optim: optimizers, the papers' lr schedules, EMA
- checkpoint: atomic writes, exact resume
"""
