"""Device-generic (torch) versions of the pipeline's geometry stages.

The numba modules in :mod:`model` are the CPU path. The modules here express the same stages with
torch tensors so that on a CUDA device every stage — UDF, UBlock gathering, Pad-Average, marching
cubes, clean-up — runs where the network runs, with no device→host copy of big arrays between
stages. They run on the CPU too, which is how the tests check them against the numba path.
"""
