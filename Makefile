# The two set-up commands: `make demo` and `make test`. Each creates .venv if missing and
# installs everything it needs from the package registries (CPU torch 2.13.0 first, so the
# package's torch requirement is already satisfied and no CUDA build is fetched).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow lint data clean-venv browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# Public test photos that ship inside registry packages (insightface's sample images);
# fetched by package name into .cache/packages, never at test run time.
data: $(STAMP)
	$(PY) tools/packages.py insightface face-api gan-face-generate

demo: $(STAMP)
	$(VENV)/bin/pareidolia demo

test: $(STAMP) data
	$(PY) -m pytest -m "not slow" -q

# Debian's Chromium for the web page's end-to-end tests (Playwright drives it; its own browser
# download is never used). Installed with apt-get when missing; sudo only when not root.
browser:
	test -x /usr/bin/chromium || { SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  APT="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"; \
	  $$APT install -y chromium || { $$APT update && $$APT install -y chromium; }; }

test-slow: $(STAMP) data browser
	$(PY) -m pytest -m slow -q || [ $$? -eq 5 ]  # 5: no slow test selected

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools benchmarks
	$(VENV)/bin/ruff format --check src tests tools benchmarks
	$(VENV)/bin/mypy

clean-venv:
	rm -rf $(VENV)
