from django.urls import path

from scheduling.views import runs, schedules

urlpatterns = [
    path("t/<uuid:tenant_code>/schedules/", schedules.schedule_list, name="schedules"),
    path("t/<uuid:tenant_code>/schedules/new/", schedules.schedule_create, name="schedule_create"),
    path("t/<uuid:tenant_code>/runs/", runs.run_list, name="runs"),
    path("schedules/<uuid:code>/", schedules.schedule_detail, name="schedule_detail"),
    path("schedules/<uuid:code>/edit/", schedules.schedule_edit, name="schedule_edit"),
    path("schedules/<uuid:code>/delete/", schedules.schedule_delete, name="schedule_delete"),
    path("schedules/<uuid:code>/toggle/", schedules.schedule_toggle, name="schedule_toggle"),
    path("schedules/<uuid:code>/run/", schedules.schedule_run_now, name="schedule_run_now"),
    path("runs/<uuid:code>/", runs.run_detail, name="run_detail"),
    path("runs/<uuid:code>/retry/", runs.run_retry, name="run_retry"),
]
