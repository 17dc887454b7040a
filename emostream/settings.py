"""``emostream.settings.Settings``: the settings class under the distribution's own name.

The settings live in ``emostream.schemas.settings`` (the bottom layer, which every part imports); this alias lets
tools outside the code, such as the deployment checks that test each ``EMOSTREAM_*`` variable of
docker-compose.yml against ``Settings.model_fields``, import them from the package named ``emostream``.
"""

from emostream.schemas.settings import Settings

__all__ = ["Settings"]
