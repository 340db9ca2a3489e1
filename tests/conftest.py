"""What every test shares: one BLAS thread per worker when the suite runs in parallel.

``python -m pytest`` runs the tests on every core, one pytest-xdist worker process per
core (``-n auto`` in pyproject.toml). If each worker also let OpenBLAS start a thread
per core, N workers would run N x N threads on N cores, and an OpenBLAS thread that
waits for a busy core spins and stalls the others. So a worker holds BLAS to one
thread, and its environment says the same to the processes it starts (notebook
kernels, process pools). ``python -m pytest -n 0`` runs in one process, untouched.
"""

import os

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
