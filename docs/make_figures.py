"""Draw the figures of the README (``docs/legendre.png``).

Run from anywhere: ``python docs/make_figures.py``. Only the pure NumPy
functions of :mod:`keras_lmu.legendre` are used, so any Keras backend will do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_lmu import legendre  # noqa: E402

HERE = Path(__file__).resolve().parent


def smooth_signal(steps: int, seed: int = 0, cutoff: float = 0.03) -> np.ndarray:
    """White noise low-pass filtered in the frequency domain, scaled to peak 1."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(steps))
    frequencies = np.fft.rfftfreq(steps)
    spectrum[frequencies > cutoff] = 0.0
    signal = np.fft.irfft(spectrum, n=steps)
    return signal / np.max(np.abs(signal))


def run_memory(A_bar: np.ndarray, B_bar: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The memory states ``m_t = A_bar m_{t-1} + B_bar u_t`` from ``m_{-1} = 0``."""
    memory = np.zeros((len(u), len(B_bar)))
    state = np.zeros(len(B_bar))
    for t, value in enumerate(u):
        state = A_bar @ state + B_bar * value
        memory[t] = state
    return memory


def plot_basis(ax, order: int = 6, theta: float = 1.0) -> None:
    """Panel (a): the shifted Legendre polynomials over the window."""
    delays = np.linspace(0.0, theta, 400)
    basis = legendre.legendre_basis(order, theta, delays)
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, order))
    for i in range(order):
        ax.plot(delays / theta, basis[:, i], color=colors[i], lw=1.8, label=f"$P_{i}$")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel(r"delay $\tau / \theta$")
    ax.set_ylabel(r"$P_i(2\tau/\theta - 1)$")
    ax.set_title(f"(a) Shifted Legendre basis, order {order}")
    ax.legend(
        ncol=order, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False
    )


def plot_window(ax, order: int = 12, theta: float = 60.0, steps: int = 240) -> None:
    """Panel (b): a signal and the last ``theta`` steps decoded from the memory."""
    u = smooth_signal(steps)
    A_bar, B_bar = legendre.discrete_system(order, theta, "zoh")
    memory = run_memory(A_bar, B_bar, u)

    t = int(0.8 * steps)
    delays = np.linspace(0.0, theta, 200)
    decoded = legendre.decode_window(memory[t], theta, delays)
    # With zero-order hold, u_t is held over the step that ends at time t, so a
    # delay tau reads the input around step t - tau + 1/2.
    times = t - delays + 0.5

    ax.axvspan(t - theta, t, color="tab:orange", alpha=0.12, lw=0)
    ax.plot(np.arange(steps), u, color="0.25", lw=1.5, label=r"input $u_t$")
    ax.plot(
        times,
        decoded,
        color="tab:orange",
        lw=2.2,
        ls="--",
        label=r"decoded from $m_t$: $\sum_i P_i(2\tau/\theta-1)\, m_{t,i}$",
    )
    ax.axvline(t, color="tab:orange", lw=1.0)
    ax.annotate(
        rf"window $\theta = {theta:g}$ steps",
        xy=(t - theta / 2, -1.08),
        ha="center",
        va="bottom",
        fontsize=9,
        color="tab:orange",
    )
    ax.annotate("$t$", xy=(t, 1.02), ha="center", va="bottom", fontsize=10)
    ax.set_xlim(0, steps - 1)
    ax.set_ylim(-1.15, 1.25)
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.set_title(f"(b) The memory at step $t$ holds the last $\\theta$ steps (order {order})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)


def make_legendre_figure(path: Path) -> None:
    """Draw both panels side by side and save them as a PNG at ``path``."""
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11.0, 4.2), gridspec_kw={"width_ratios": [1.0, 1.6]}, layout="constrained"
    )
    plot_basis(left)
    plot_window(right)
    fig.savefig(path, dpi=130, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the figures to")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "legendre.png"
    make_legendre_figure(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
