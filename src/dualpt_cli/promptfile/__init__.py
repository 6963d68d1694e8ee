"""The prompt file: typed, versioned metadata (:mod:`meta`) and safetensors reading and writing (:mod:`io`)."""
