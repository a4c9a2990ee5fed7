# dhcp6ha: the two everyday commands are `make run` and `make test`.
#
# The virtualenv (.venv) is made on first use and the project is installed in
# it (editable, with its test extras) whenever setup.cfg or pyproject.toml
# changes.  The install is an editable one in "compat" mode: it puts this
# directory on sys.path, which is what lets twistd find the plugin in
# ./twisted/plugins (a folder with no __init__.py, merged into Twisted's own
# twisted.plugins package).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dhcp6ha-installed
CONFIG ?= etc/dhcp6ha.ini
TESTS ?= tests

# Also put the source tree on the path explicitly, so that twistd finds the
# plugin even if a future setuptools drops the "compat" editable mode.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: run test unit lint format mypy bench venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]' --config-settings editable_mode=compat \
		|| $(PY) -m pip install --quiet -e '.[test,dev]'
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

# Run the server in the foreground with etc/dhcp6ha.ini (::1 port 5547,
# relayed clients only, leases in var/dhcp6ha.sqlite).  Ctrl-C or SIGTERM
# stops it cleanly.
run: $(STAMP)
	mkdir -p var
	$(VENV)/bin/twistd --pidfile var/dhcp6ha.pid -n dhcp6ha --config $(CONFIG)

# The whole suite, integration tests included (those need root and the Debian
# DHCPv6 clients, and say why they skip otherwise).
test: $(STAMP)
	$(PY) -b -m twisted.trial $(TESTS)

# Unit tests only (no namespaces, no real clients).
unit: $(STAMP)
	$(PY) -b -m twisted.trial $$(ls tests/test_*.py | sed 's,/,.,; s,\.py$$,,')

lint: $(STAMP)
	$(VENV)/bin/ruff check dhcp6ha tests twisted bench
	$(VENV)/bin/ruff format --check dhcp6ha tests twisted bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix dhcp6ha tests twisted bench
	$(VENV)/bin/ruff format dhcp6ha tests twisted bench

mypy: $(STAMP)
	$(VENV)/bin/mypy dhcp6ha twisted/plugins/dhcp6ha_plugin.py

bench: $(STAMP)
	@if ls bench/*.py >/dev/null 2>&1; then \
		for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done; \
	else echo "no benchmarks in bench/"; fi

clean:
	rm -rf _trial_temp* .mypy_cache .ruff_cache twisted/plugins/dropin.cache
