"""A run's private copy of the fleet's topics and lane subscriptions, created as Terraform would."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

from worker.dev.harness.stack_env import StackEnv
from worker.shared import environment
from worker.shared.resources import load_resources


@dataclass(frozen=True)
class RunTopology:
    """A private copy of the fleet's topics and lane subscriptions for one harness run.

    Isolating a run keeps its delivery counts and backlog its own while other engineers' tests share
    the emulator; the lanes copy ``terraform/fleet.json`` (filters, retry and dead-letter policies).
    """

    run_id: str
    jobs_topic: str
    results_topic: str
    dead_letter_topic: str
    interactive_subscription: str
    batch_subscription: str
    dead_letter_subscription: str
    dead_letter_handler_subscription: str

    @classmethod
    def named(cls, run_id: str) -> RunTopology:
        base = f"lg-{run_id}"
        return cls(
            run_id=run_id,
            jobs_topic=f"{base}-jobs",
            results_topic=f"{base}-results",
            dead_letter_topic=f"{base}-dead-letter",
            interactive_subscription=f"{base}-jobs-interactive",
            batch_subscription=f"{base}-jobs-batch",
            dead_letter_subscription=f"{base}-dead-letter-hold",
            dead_letter_handler_subscription=f"{base}-dead-letter-handler",
        )

    def env(self) -> dict[str, str]:
        """Environment overrides that point a worker (and the collector) at this topology."""
        return {
            environment.JOBS_TOPIC: self.jobs_topic,
            environment.RESULTS_TOPIC: self.results_topic,
            environment.DEAD_LETTER_TOPIC: self.dead_letter_topic,
            environment.INTERACTIVE_SUBSCRIPTION: self.interactive_subscription,
            environment.BATCH_SUBSCRIPTION: self.batch_subscription,
            environment.DEAD_LETTER_SUBSCRIPTION: self.dead_letter_subscription,
            environment.DEAD_LETTER_HANDLER_SUBSCRIPTION: self.dead_letter_handler_subscription,
        }

    def subscriptions(self) -> tuple[str, ...]:
        return (
            self.interactive_subscription,
            self.batch_subscription,
            self.dead_letter_subscription,
            self.dead_letter_handler_subscription,
        )

    def create(
        self,
        stack: StackEnv,
        *,
        max_delivery_attempts: int | None = None,
        time_divisor: float | None = None,
    ) -> None:
        """Create the topics and subscriptions with the official clients, as Terraform would.

        ``time_divisor`` labels the lane subscriptions so the local emulator divides their ack deadlines
        and retry backoffs (``devstack-time-divisor``): a kill -9'd worker's leases come back sooner.
        """
        labels = {"devstack-time-divisor": f"{time_divisor:g}"} if time_divisor else {}
        resources = load_resources()
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        try:
            for topic in (self.jobs_topic, self.results_topic, self.dead_letter_topic):
                publisher.create_topic(request={"name": stack.topic_path(topic)})
            lanes = {"interactive": self.interactive_subscription, "batch": self.batch_subscription}
            for lane in resources.lanes:
                subscriber.create_subscription(
                    request={
                        "name": stack.subscription_path(lanes[lane.name]),
                        "topic": stack.topic_path(self.jobs_topic),
                        "filter": lane.filter,
                        "labels": labels,
                        "ack_deadline_seconds": lane.ack_deadline_s,
                        "retry_policy": {
                            "minimum_backoff": duration_pb2.Duration(seconds=lane.retry_min_backoff_s),
                            "maximum_backoff": duration_pb2.Duration(seconds=lane.retry_max_backoff_s),
                        },
                        "dead_letter_policy": {
                            "dead_letter_topic": stack.topic_path(self.dead_letter_topic),
                            "max_delivery_attempts": max_delivery_attempts or lane.max_delivery_attempts,
                        },
                    }
                )
            for name in (self.dead_letter_subscription, self.dead_letter_handler_subscription):
                subscriber.create_subscription(
                    request={
                        "name": stack.subscription_path(name),
                        "topic": stack.topic_path(self.dead_letter_topic),
                        "ack_deadline_seconds": 60,
                    }
                )
        finally:
            subscriber.close()

    def delete(self, stack: StackEnv) -> None:
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        try:
            for name in self.subscriptions():
                with contextlib.suppress(Exception):
                    subscriber.delete_subscription(request={"subscription": stack.subscription_path(name)})
            for topic in (self.jobs_topic, self.results_topic, self.dead_letter_topic):
                with contextlib.suppress(Exception):
                    publisher.delete_topic(request={"topic": stack.topic_path(topic)})
        finally:
            subscriber.close()


def stack_for_run(stack: StackEnv, topology: RunTopology) -> StackEnv:
    """The stack's environment with the run's topics and subscriptions substituted."""
    values = dict(stack.values)
    values.update(topology.env())
    return StackEnv(values)
