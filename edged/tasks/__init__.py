"""Published tasks on the device: every adapted task served from one resident base model per base, switched
by writing its delta into the base's weights in place (O(nnz), never a model load).

- `records`:  the `tasks` and `task_switches` tables (all their SQL).
- `delta`:    a task's delta, parsed once from its `delta.safetensors` (sparse entries, 2:4 patterns, dense tensors,
              head; formats 1 and 2).
- `resident`: the resident base model and its in-place task switch, restoring what the last task changed.
- `server`:   the one inference thread: micro-batched predicts per task, the delta cache, switch records.
- `compiled`: a task's compiled artifact (onnxruntime session, TensorRT engine) as its predictions' backend, kept
              in an LRU within a byte budget, and which backend answers each task.
- `inputs`:   predict request bodies (image files, an .npz, texts) as model inputs, with clear 4xx errors.
- `energy`:   energy per inference: the power source read around each micro-batch's forward.
"""
