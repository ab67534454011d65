-- PostGIS itself.  Needs a superuser (the embedded cluster) or an existing extension.
CREATE EXTENSION IF NOT EXISTS postgis;
