"""Custom kernels: each op has one public function with a reference, a fast CPU path and a GPU path."""
