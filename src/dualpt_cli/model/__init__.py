"""The maths train and predict share, on tensors: Sinkhorn, the graph-matching plan and its ablations, the prompt
learners, the final head and the linear probe. No file formats, no I/O."""
