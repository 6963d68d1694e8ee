"""The maths train and predict share, on tensors: Sinkhorn, the graph-matching plan and its ablations, the prompt
learners, the final head, the linear probe and the calibration measures. No file formats, no I/O."""
