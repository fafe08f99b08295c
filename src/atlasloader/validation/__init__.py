"""Validation: check that a store is whole (every chunk decodes, shapes agree, registrations
match the data) and name what is wrong; leftovers of an interrupted write are reported as
``incomplete``, not as damage.

:mod:`.validate` holds :func:`~.validate.validate_store`, :func:`~.validate.check_store`,
:class:`~.validate.Problem` and :class:`~.validate.ValidationReport`.

Imports: validation may import :mod:`atlasloader.store`, :mod:`atlasloader.registry`, the
cluster helpers and :mod:`atlasloader.errors`; never loading, conversion or the CLI, which
import it.
"""
