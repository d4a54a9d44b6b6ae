"""The embedded default database (`embedded://PATH`): mongomock, adapted to pymongo 4.20 (mongomock_compat),
whose whole content persists in one checksummed BSON file under a lock (data_file). Only a configuration
naming `embedded://` loads this package (utils/connectDB.py); a run against a server never imports it."""
