"""What training and inference both stand on: the device and its precision, processes and data
loaders. Never imports a specific model (only through `factory.create_model`).

- accel: precision (bf16 measured, not guessed from CPU flags), channels-last, BN folding, compile
  decisions by cost
- distributed: torch.distributed process groups (torchrun), timeouts, samplers
- loaders: DataLoader construction, worker counts and seeds, memory checks
- flops, timing: the network's work and measured wall time, for the decisions above
"""
