"""The package version, apart from the package's face so that any module (and setuptools) can
read it without importing the rest."""

__version__ = "0.1.0"
