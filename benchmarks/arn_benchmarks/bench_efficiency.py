"""The accumulation's throughput as a fraction of one float64 dsyrk (1.0 = BLAS speed)."""

from .common import make_data  # noqa: F401, I001  (sets up the import path first)

from efficiency import measure


class BlasEfficiency:
    params = ([(20_000, 64, 30), (8_000, 128, 30), (50_000, 16, 10)],)
    param_names = ["n_m_d"]
    timeout = 300

    def track_accumulate_over_syrk(self, n_m_d):
        return measure(*n_m_d, repeat=2)["efficiency"]

    track_accumulate_over_syrk.unit = "fraction of dsyrk throughput"
