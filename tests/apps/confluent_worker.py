"""A confluent-kafka consumer worker run under ``opentelemetry-instrument`` by the tests: a plain poll loop.

Consumes RECORDS records from TOPIC (partition 0, from the start) and acknowledges each on TOPIC.ack, then waits to
be stopped; it listens on HEALTH_PORT from the moment it is assigned until it stops.
"""

import os
import signal
import socket

from confluent_kafka import Consumer, Producer, TopicPartition

import gotrails_otel as gt


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    consumer = Consumer({"bootstrap.servers": os.environ["KAFKA"], "group.id": "worker", "enable.auto.commit": False})
    consumer.assign([TopicPartition(os.environ["TOPIC"], 0, 0)])
    producer = Producer({"bootstrap.servers": os.environ["KAFKA"], "linger.ms": 0})
    health = socket.socket()
    health.bind(("127.0.0.1", int(os.environ["HEALTH_PORT"])))
    health.listen()
    wanted, handled = int(os.environ.get("RECORDS", "1")), 0
    while handled < wanted:
        record = consumer.poll(0.5)
        if record is None or record.error():
            continue
        with gt.step("HandlePaymentCreated"):
            gt.set_metadata(key=record.key().decode())
            producer.produce(os.environ["TOPIC"] + ".ack", key=record.key(), value=b'{"ack": true}', partition=0)
            producer.flush(10)
        handled += 1
    consumer.close()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    health.close()


if __name__ == "__main__":
    main()
