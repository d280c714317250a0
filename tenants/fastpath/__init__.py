"""The dispatcher's fast path: the one place that relies on django-q2's internals
and on the databases' JSON functions.

A pass over 10,000 due schedules takes a fixed number of statements because of
two shortcuts, both fenced in here so the rest of the code uses only Django's and
django-q2's public APIs:

* sql_writes.py: INSERT and UPDATE of any number of rows in one statement, the
  rows sent as one JSON parameter that SQLite (json_each, ->, ->>) or PostgreSQL
  (jsonb_array_elements, ->, ->>, casts to the column types) unpacks. It writes
  each column's stored form itself (SQLite: UUIDs as 32 hex digits, datetimes as
  naive UTC text).
* task_packages.py: django-q2 task packages built and signed as async_task would
  (pickle of its task dict, signed with its key and salt), thousands at the cost
  of one pickle, and put on its brokers in one statement (ORM: rows of OrmQ) or
  one round trip (Redis: RPUSH onto the broker's list).

Its contract test is tests/tenants/test_fastpath_contract.py: every assumption below has
a test there, run on both profiles (SQLite with the ORM broker; PostgreSQL with
Redis). Run it first after any upgrade of django-q2, Django or a database.

On a django-q2 upgrade, re-check (against django_q/tasks.py, signing.py,
core_signing.py, brokers/orm.py, brokers/redis_broker.py, models.py):
1. async_task's task dict: the keys _task sets (id, name, func, args, kwargs,
   started, ack_failure) are still all a worker needs; new keys it adds by
   default (from Conf: cached, sync, ...) and whether we need them; that it still
   sends no signal we rely on (we do not send pre_enqueue).
2. SignedPackage.dumps: key Conf.SECRET_KEY, salt Conf.PREFIX, PickleSerializer,
   compression by Conf.COMPRESSED, and the signed format of its core_signing
   (BatchSigner's output must stay what SignedPackage.loads accepts).
3. ORM.enqueue: one OrmQ row (key = broker.list_key, payload, lock = now) per
   task, and dequeue taking rows whose lock is in the past; OrmQ's table and
   columns.
4. Redis.enqueue: RPUSH of the package onto broker.list_key.
5. The worker still calls the task's func with its args (our run code) and
   acknowledges it when ack_failure is set.
6. The look for lost tasks (task_packages.scan_queue, package_run_code): the
   signed format "[.]b64:timestamp:signature" (core_signing.dumps, "." when
   compressed) with the run code as a plain string inside the pickle; Redis.dequeue
   still a BLPOP with no acknowledgement (a taken task leaves the list); ORM.dequeue
   still moving a taken row's lock to now + retry, compared with timezone.now().
On a Django or database upgrade: the stored forms in sql_writes._preparer (UUID,
datetime, JSON columns), the cast types of PostgreSQL columns, and SQLite's
"INSERT ... SELECT ... WHERE true ON CONFLICT" and RETURNING (SQLite 3.35+).
"""
